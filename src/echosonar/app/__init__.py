"""Product surface: analyze, report page, server, quickstart. Composes stages; owns no model logic."""

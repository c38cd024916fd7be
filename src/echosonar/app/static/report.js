// Link reasoning citations to boxes: hover highlights, click pins and jumps to the view.
(function () {
  function rects(view, s) {
    return document.querySelectorAll('rect[data-view="' + view + '"][data-s="' + s + '"]');
  }
  function set(el, on) {
    rects(el.dataset.view, el.dataset.s).forEach(function (r) { r.classList.toggle("hl", on); });
    el.classList.toggle("hl", on);
  }
  document.querySelectorAll(".cite").forEach(function (el) {
    el.addEventListener("mouseenter", function () { set(el, true); });
    el.addEventListener("mouseleave", function () { if (!el.dataset.pinned) set(el, false); });
    el.addEventListener("focus", function () { set(el, true); });
    el.addEventListener("blur", function () { if (!el.dataset.pinned) set(el, false); });
    el.addEventListener("click", function () {
      var pin = !el.dataset.pinned;
      if (pin) { el.dataset.pinned = "1"; } else { delete el.dataset.pinned; }
      set(el, pin);
    });
  });
})();

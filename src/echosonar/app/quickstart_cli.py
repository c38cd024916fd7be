from echosonar.utils.notbuilt import not_built

add_arguments, run = not_built("quickstart", issue=10)

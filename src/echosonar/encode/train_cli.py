from echosonar.utils.notbuilt import not_built

add_arguments, run = not_built("train encoder", issue=6)

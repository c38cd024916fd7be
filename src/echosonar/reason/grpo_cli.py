from echosonar.utils.notbuilt import not_built

add_arguments, run = not_built("train grpo", issue=8)

from tasty_oneshot.cli import main

main()

from yolomlu.cli import main

main()

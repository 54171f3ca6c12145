from ptctl.cli.main import main

main()

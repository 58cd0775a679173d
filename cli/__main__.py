from posegen.cli.app import main

main()

from edaenv.cli.app import main

main()

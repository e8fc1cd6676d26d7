from emotk.cli import main

main()

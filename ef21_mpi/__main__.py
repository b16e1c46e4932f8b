import sys

from ef21_mpi.cli.main import main

sys.exit(main())

import sys

from fediguard.cli import main

sys.exit(main())

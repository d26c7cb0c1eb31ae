import sys

from flagstream.cli import main

sys.exit(main())

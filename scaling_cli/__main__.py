import sys

from scaling_cli.main import main

sys.exit(main())

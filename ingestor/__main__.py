"""`python -m ingestor` is the same as the `ingestor` console command."""

from ingestor.cli import main

raise SystemExit(main())

"""One module per `scaling` subcommand: add_arguments(parser) and run(args) -> int."""

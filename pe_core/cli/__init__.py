"""The ``pe`` command line. Sub-commands live one per module; plugins add more through
``pe_register_commands``. Nothing heavy is imported before a command runs."""

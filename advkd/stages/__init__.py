"""The stages behind the workflow's rules that need the method registry, one module per rule file
(workflow/rules/<name>.smk -> advkd/stages/<name>.py); each is a plain function the CLI (advkd.cli) calls."""

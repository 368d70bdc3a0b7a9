"""The department console: people sign in and work tickets and campaigns in a browser (DESIGN.md §7)."""

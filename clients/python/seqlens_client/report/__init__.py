"""Pictures of an explanation: a self-contained HTML page, ANSI terminal text, matplotlib PNGs."""

"""The UI layer: one panel per source, and the dialogs."""

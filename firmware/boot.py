# Runs first at every reset. Does nothing that can fail or block: main.py starts the app,
# so a broken app never locks the board out of its REPL.
try:
    import gc

    gc.collect()
except Exception:  # boot.py always exits
    pass

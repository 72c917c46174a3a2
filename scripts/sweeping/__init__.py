"""scripts/sweep.py's parts, one module per job, in the order a sweep uses them:

    command   the command line, the workflow file, what the user is told
    grid      axes, seeds and the runs they make (a run's key)
    runs      a run and the states it goes through
    checks    every server has what the grid uses, before anything is queued
    dispatch  the runs handed to the servers and followed to their end, through server trouble
    server    one server's HTTP API as the sweep uses it
    downloads a finished run collected from the server that ran it
    results   runs.json, runs.csv and the contact sheet
"""

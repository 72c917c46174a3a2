"""The guidance logic: pure torch, no ComfyUI import, unit-tested everywhere.

A guidance method is a `GuidanceSchedule` (schedule.py). The ComfyUI glue in nodes/ asks it,
for every model evaluation of a sampling run, which samples need the unconditional pass and,
once the predictions are in, which guidance weight each sample gets.
"""

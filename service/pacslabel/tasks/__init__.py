"""Reading tasks: slots per item, atomic claiming ("Next"), repeats, explicit assignment, task states."""

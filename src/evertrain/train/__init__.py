"""Training: trainers behind one interface, executors, budgets, sweeps and the training step."""

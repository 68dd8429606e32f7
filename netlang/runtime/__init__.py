"""Running prepared graphs: programs, the executor, state and the array backends."""

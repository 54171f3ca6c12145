"""The live scheduler: admission, the rounds that start, resize and retire jobs under one lock,
launches through the profile's backend, and the task each rank of an attempt runs."""

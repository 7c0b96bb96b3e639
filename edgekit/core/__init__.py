"""What every stage and library shares: the run directory and its manifest, results and gate records,
profiles, the variant and network registries, the machine, data sets, progress, timing settings.

Imports nothing of edgekit but `edgekit.errors`; TensorFlow only inside the functions that need it."""

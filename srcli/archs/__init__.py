"""Pure nn.Module architectures: no I/O, no registry, no CLI."""

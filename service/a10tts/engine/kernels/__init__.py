"""GPU kernels (Triton), each with a torch reference it is tested against."""

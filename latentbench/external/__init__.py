"""Models from outside: PyTorch modules or a pythae model wrapped as a latentbench VAE, and the ex-post
samplers fitted on their codes, saved so that they load without the model's code."""

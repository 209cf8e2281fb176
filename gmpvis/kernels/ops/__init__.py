"""One module per op (Triton kernels, launchers, torch.library registration, public function).

Deliberately empty: ``gmpvis.kernels.<op>`` is always the public function, and
``gmpvis.kernels.ops.<op>`` always the module that implements it.
"""

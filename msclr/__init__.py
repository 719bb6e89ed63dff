"""msclr: raw videos of people to action labels with MS-CLR (arXiv 2508.14889).

Sub-packages:

- :mod:`msclr.skeletons`: the skeleton registry (joints, edges, centre, flips, bones).
- :mod:`msclr.extractors`: pose backends (MeTRAbs, MediaPipe) and video decoding.
- :mod:`msclr.pipeline`: I/O and orchestration (HDF5 cache, importers, training loops).
- :mod:`msclr.models`: pure ``nn.Module`` code (ST-GCN, MS-AimCLR, losses).

Importing :mod:`msclr` never imports TensorFlow or PyTorch.
"""

__version__ = "0.1.0"

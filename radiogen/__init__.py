"""radiogen: radiogenomic map learning by multi-conditional synthesis of lung-nodule CT.

The core library (configs, models, losses, training step, checkpoints, data schema, metrics)
imports neither Ray nor MLflow, so every piece can be run and debugged in one process.
"""

__version__ = "0.1.0"

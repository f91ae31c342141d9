"""The pyfunc model as code (MLflow "models from code"): logged as a file, not as a pickled object.

``pipeline.pyfunc.log_model`` passes this file as ``python_model``; MLflow copies it into the logged
model and runs it when the model is loaded or served, so no cloudpickle payload is ever unpickled
(the weights themselves are the model directory's safetensors).
"""

import mlflow

from pipeline.pyfunc import TWilBERTPyfunc

mlflow.models.set_model(TWilBERTPyfunc())

from rds_act.data.base import TaskDataModule
from rds_act.data.parity import ParityDataModule
from rds_act.data.rpc import RPCDataModule
from rds_act.data.sparse_transform import SparseTransformDataModule

__all__ = ["TaskDataModule", "ParityDataModule", "RPCDataModule", "SparseTransformDataModule"]

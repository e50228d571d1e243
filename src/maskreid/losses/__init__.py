"""Training losses for re-ID: softmax, batch-hard triplet, N-pair and the MaskReID ranking loss."""

from .metric import (LOSSES, BatchHardTripletLoss, NPairLoss, RankingLoss, SoftmaxLoss,
                     build_loss, cosine_similarity_matrix)
from .objective import Objective

__all__ = ["LOSSES", "BatchHardTripletLoss", "NPairLoss", "RankingLoss", "SoftmaxLoss",
           "Objective", "build_loss", "cosine_similarity_matrix"]

r"""Neural-network pieces of PointCMT (`paper <https://arxiv.org/abs/2210.04208>`_)."""

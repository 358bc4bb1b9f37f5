"""Rewards behind one protocol (:class:`rtdmd.rewards.base.Reward`)."""

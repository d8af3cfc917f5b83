"""Orchestration of the four jobs (extract, train, ask, eval); each module is one job."""

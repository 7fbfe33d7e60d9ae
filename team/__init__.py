"""The team directory: teams, coaches, runners, their time zones, targets and plans.

Above ``rules`` (a runner's profile applies the team's and the runner's rule overrides)
and below ``stream`` (the step, the notifier and the report read profiles from it).
"""

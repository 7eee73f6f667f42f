# planner

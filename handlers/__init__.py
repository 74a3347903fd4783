"""What each platform event does: the route table and the tasks it names."""

from handlers.routes import ROUTES, TASK_QUEUES

__all__ = ["ROUTES", "TASK_QUEUES"]

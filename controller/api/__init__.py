"""The controller's REST API: dependencies and thin route modules over `controller.services`."""

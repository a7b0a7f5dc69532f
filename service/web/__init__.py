"""The HTTP layer: the Flask app factory, its blueprints, the guards and the metrics."""

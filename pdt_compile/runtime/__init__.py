"""The stateful shell around the maths: snapshot ring, schedule, telemetry, prediction."""

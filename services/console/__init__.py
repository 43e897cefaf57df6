"""The review console: a small web app where analysts see a project's answers, correct them and watch the
project learn. It is an upstream product like any other: it reads the system of record and publishes
chat.question / chat.feedback / model.updated to Kafka; no consumer depends on it."""

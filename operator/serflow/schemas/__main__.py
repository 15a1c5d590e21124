from serflow.schemas import schema_json

print(schema_json(), end="")

local typedefs = require "kong.db.schema.typedefs"

return {
  name = "hello",
  fields = {
    { protocols = typedefs.protocols_http },
    { config = {
        type = "record",
        fields = {
          { greeting = { type = "string", default = "world" } },
        },
      },
    },
  },
}

package = "kong-plugin-hello"
version = "0.1.0-1"
source = {
  url = "git+https://example.invalid/kong-plugin-hello.git",
}
description = {
  summary = "A minimal Kong plugin that adds an X-Hello response header.",
  license = "Apache-2.0",
}
dependencies = {}
build = {
  type = "builtin",
  modules = {
    ["kong.plugins.hello.handler"] = "kong/plugins/hello/handler.lua",
    ["kong.plugins.hello.schema"] = "kong/plugins/hello/schema.lua",
  },
}

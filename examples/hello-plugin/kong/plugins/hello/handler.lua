local HelloHandler = {
  PRIORITY = 1000,
  VERSION = "0.1.0",
}

function HelloHandler:header_filter(conf)
  kong.response.set_header("X-Hello", conf.greeting)
end

return HelloHandler

"""The wiring layer: what connects the domain packages to the app (its keys, `create_app`, HTTP clients).

The domain packages (`gateway.evaluations`, `gateway.tickets`, `gateway.callbacks`) import neither the
app nor a transport; their background loops, command lines and HTTP deliveries are started from here.
"""

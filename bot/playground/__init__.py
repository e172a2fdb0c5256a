"""The playground: the real bot with a local stand-in for Slack, in a browser (``apikeys playground``).

* ``app``: the page at ``/playground``, its JSON API and ``main``, which runs the production server
  (``bot.server.run_server``) with ``wrap`` applied in its worker;
* ``slackstub``: the stand-in for Slack's Web API and ``response_url``\\ s;
* ``sender``: requests to the app exactly as Slack signs and shapes them;
* ``limits``: Slack's limits on messages and blocks, which the stand-in enforces.

The test suite uses the stand-in and the sender too (``tests/slackstub.py``, ``tests/slackhttp.py``
add what only tests need). Nothing on the production path (``bot.server``, ``bot.api``,
``bot.slack``) imports this package; ``tests/test_layering.py`` checks it.
"""

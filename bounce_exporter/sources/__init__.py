"""Log sources: where lines come from (a followed file through every rotation, a rotated file read
once, standard input, the systemd journal), each handing over complete lines with their position.

``files`` (the tailer, its rules in its docstring), ``rotation`` (the rotated-name rule, finding
generations), ``lines`` (the one line splitter), ``position`` (what is saved), ``opening``,
``catchup``, ``stdin``, ``journal``, ``wakeup`` (watchdog: a hint to read sooner).
"""

"""Running a build: the executor, COPY/ADD, RUN, the context, the layer cache."""

"""What a user does with the tool, one module per mode (``vision-recipes MODE ...``): train, predict,
evaluate, export, demo, push. Modes sit on the top floor: they call the lifecycle, the tasks and the hub,
nothing imports them."""

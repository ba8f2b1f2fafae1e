from jupyter_gpu_backend.server import main

main()
